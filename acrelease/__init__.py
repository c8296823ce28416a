"""acrelease: release, publish and serve OTA firmware for ESP8266/ESP32 Arduino and PlatformIO projects."""

__version__ = "0.1.0"
