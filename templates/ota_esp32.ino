// ESP32 family (arduino-esp32 core): check for an update at the acrelease server.
//
// Replace HOST, PROJECT and TARGET: `acrelease serve` prints the exact line for each target.
// The server compares FW_VERSION (sent as x-ESP32-version) with the newest release for TARGET:
// equal or newer -> 304 (HTTP_UPDATE_NO_UPDATES), older -> the new image. ESP32 images are
// served uncompressed (the ESP32 client cannot take gzip).
#include <WiFi.h>
#include <HTTPUpdate.h>
#include "acrelease_version.h"

static const char* UPDATE_URL = "http://HOST:8000/update/PROJECT/TARGET";

void checkForUpdate() {
  WiFiClient client;
  t_httpUpdate_return result = httpUpdate.update(client, UPDATE_URL, FW_VERSION);
  switch (result) {
    case HTTP_UPDATE_FAILED:
      Serial.printf("update failed (%d): %s\n", httpUpdate.getLastError(),
                    httpUpdate.getLastErrorString().c_str());
      break;
    case HTTP_UPDATE_NO_UPDATES:
      Serial.println("up to date: " FW_VERSION);
      break;
    case HTTP_UPDATE_OK:
      break;  // not reached: the device reboots
  }
  // Filesystem image (targets with `filesystem = true`): same URL, x-ESP32-mode: spiffs.
  // httpUpdate.updateSpiffs(client, UPDATE_URL, FW_VERSION);
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
