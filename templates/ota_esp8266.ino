// ESP8266 (esp8266/Arduino core): check for an update at the acrelease server.
//
// Replace HOST, PROJECT and TARGET: `acrelease serve` prints the exact line for each target.
// The server compares FW_VERSION (sent as x-ESP8266-version) with the newest release for
// TARGET: equal or newer -> 304 (HTTP_UPDATE_NO_UPDATES), older -> the new image.
#include <ESP8266WiFi.h>
#include <ESP8266httpUpdate.h>
#include "acrelease_version.h"

static const char* UPDATE_URL = "http://HOST:8000/update/PROJECT/TARGET";

void checkForUpdate() {
  WiFiClient client;
  // Firmware. On success the device reboots into the new image.
  t_httpUpdate_return result = ESPhttpUpdate.update(client, UPDATE_URL, FW_VERSION);
  switch (result) {
    case HTTP_UPDATE_FAILED:
      Serial.printf("update failed (%d): %s\n", ESPhttpUpdate.getLastError(),
                    ESPhttpUpdate.getLastErrorString().c_str());
      break;
    case HTTP_UPDATE_NO_UPDATES:
      Serial.println("up to date: " FW_VERSION);
      break;
    case HTTP_UPDATE_OK:
      break;  // not reached: the device reboots
  }
  // Filesystem image (targets with `filesystem = true`): same URL, x-ESP8266-mode: spiffs.
  // ESPhttpUpdate.updateFS(client, UPDATE_URL, FW_VERSION);
}

void setup() {
  Serial.begin(115200);
  WiFi.begin("SSID", "PASSWORD");
  while (WiFi.status() != WL_CONNECTED) delay(250);
  Serial.println("running " FW_VERSION);
}

void loop() {
  checkForUpdate();
  delay(60UL * 60UL * 1000UL);  // once an hour
}
