"""Constants and tables of the ESP image formats (Espressif's image format, the Arduino cores)."""

from __future__ import annotations

from acrelease.chips import CHIPS

MAGIC = 0xE9
GZIP_MAGIC = b"\x1f\x8b"
APP_DESC_MAGIC = 0xABCD5432
PARTITION_MAGIC = b"\xaa\x50"
PARTITION_TABLE_OFFSET = 0x8000
APP_OFFSET = 0x10000  # first app partition of the default partition tables
ARDUINO_APP_OFFSET = 0x1000  # eboot occupies 0..0x1000 of the ESP8266 Arduino .bin
MAX_GUNZIP = 16 * 1024 * 1024  # larger than any ESP flash; bounds zip bombs
MAX_SIGNATURE = 4096  # RSA-4096 is 512 bytes; anything much larger is not a signature
MAX_SEGMENTS = 16  # the ROM and IDF loaders refuse more
CHECKSUM_SEED = 0xEF
ESP8266 = next(chip for chip in CHIPS if chip.image_chip_id is None)

FLASH_MODES = {0: "qio", 1: "qout", 2: "dio", 3: "dout", 4: "fast_read", 5: "slow_read"}
MIB = 1024 * 1024
# Header size nibble -> bytes. ESP8266: the update client's own table (Esp.cpp magicFlashChipSize,
# docs/protocol.md F.18): 5 and 6 ("-c1" layouts) map to nothing there, so to None here.
FLASH_SIZES: dict[str, dict[int, int]] = {
    "ESP8266": {0: MIB // 2, 1: MIB // 4, 2: MIB, 3: 2 * MIB, 4: 4 * MIB, 8: 8 * MIB, 9: 16 * MIB},
    "ESP32": {n: MIB << n for n in range(8)},
}
ESP32_FREQS = {0xF: "80m", 0x0: "40m", 0x1: "26m", 0x2: "20m"}
# Header frequency nibble -> label; chips whose flash clock differs from the ESP32's table.
FLASH_FREQS: dict[str, dict[int, str]] = {
    "esp32c2": {0xF: "60m", 0x0: "30m", 0x1: "20m", 0x2: "15m"},
    "esp32h2": {0xF: "48m", 0x0: "24m", 0x1: "16m", 0x2: "12m"},
    "esp32c6": {0x0: "40m", 0x2: "20m"},
}
# Where ESP8266 segments can load (DRAM, IRAM incl. the cache area eboot uses, flash IROM, RTC);
# used to tell an ESP8266 header from an ESP32 one whose bytes happen to look alike.
ESP8266_REGIONS = (
    (0x3FFE8000, 0x40000000),
    (0x40100000, 0x40110000),
    (0x40200000, 0x40300000),
    (0x60001000, 0x60002000),
)
BOOTLOADER_OFFSETS = sorted({chip.bootloader_offset for chip in CHIPS if chip.bootloader_offset})
MERGED = "merged full-flash image (bootloader + partition table + app): export the app-only .bin"
