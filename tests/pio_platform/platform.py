"""PlatformIO platform class of the offline test platform (nothing to configure).

PlatformIO derives the class name from platform.json's name: "acrelease-testesp" -> AcreleasetestespPlatform.
"""

from platformio.public import PlatformBase


class AcreleasetestespPlatform(PlatformBase):
    pass
