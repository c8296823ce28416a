// AutoConnect (ESP8266 or ESP32): let a person pick an image from the acrelease catalog.
//
// AutoConnectUpdate asks GET /_catalog?op=list&path=<uri> and then downloads <uri>/<file>; with
// uri = "PROJECT/TARGET" the acrelease server lists exactly that target's released images,
// newest first, their names carrying the version. AutoConnect sends no version header, so the
// page always offers the images; the server recognises the running one by its MD5.
// Replace HOST, PROJECT and TARGET: `acrelease serve` prints the exact values.
#if defined(ARDUINO_ARCH_ESP8266)
#include <ESP8266WiFi.h>
#include <ESP8266WebServer.h>
using WebServer = ESP8266WebServer;
#else
#include <WiFi.h>
#include <WebServer.h>
#endif
#include <AutoConnect.h>
#include "acrelease_version.h"

WebServer server;
AutoConnect portal(server);
AutoConnectUpdate update("HOST", 8000);  // the acrelease server; 8000 is AutoConnect's default

void setup() {
  Serial.begin(115200);
  Serial.println("running " FW_VERSION);
  if (portal.begin()) {
    update.uri = "PROJECT/TARGET";  // relative, no leading slash: as AutoConnect expects
    update.attach(portal);
  }
}

void loop() {
  portal.handleClient();
}
