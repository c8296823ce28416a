// acrelease_version.h: the firmware version, compiled in by `acrelease build`.
//
// `acrelease build` passes the release version as a C string define through PlatformIO
// (PLATFORMIO_BUILD_FLAGS=-DFW_VERSION=\"1.2.3\"), so platformio.ini needs no edit. Builds made
// any other way (a plain `pio run`, the Arduino IDE) get the fallback below, which is never a
// release version: acrelease refuses to record an image that does not carry the release's
// version string, and the update server treats "0.0.0-dev" as older than every release.
//
// The version only reaches the binary if the sketch USES it. Pass it to the update call, so
// the device reports it in the x-ESP8266-version / x-ESP32-version header and the server can
// answer 304 ("you are up to date") instead of sending the same image again and again:
//
//   ESPhttpUpdate.update(client, "http://HOST:8000/update/PROJECT/TARGET", FW_VERSION);   // ESP8266
//   httpUpdate.update(client, "http://HOST:8000/update/PROJECT/TARGET", FW_VERSION);      // ESP32
//
// Arduino IDE / arduino-cli users: set the version here (or with
// `arduino-cli compile --build-property "build.extra_flags=-DFW_VERSION=\"1.2.3\""`), export the
// compiled binary, then `acrelease collect SKETCH_DIR --version 1.2.3`.
//
// The define's name is configurable: [project] version_define = "MY_VERSION" in releases.toml.
#pragma once

#ifndef FW_VERSION
#define FW_VERSION "0.0.0-dev"
#endif
