"""The one error hierarchy of acrelease.

Every error a *user* can cause derives from :class:`AcreleaseError`. The CLI maps it to
one line on stderr and to the class's ``exit_code`` (see ``acrelease.cli``); anything else
is a bug and keeps its traceback. Messages say what went wrong, where (file, TOML path,
URL) and what to do about it.
"""

from __future__ import annotations

from collections.abc import Iterable


class AcreleaseError(Exception):
    """Root of every user-facing error. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(AcreleaseError):
    """Raised when command-line arguments contradict each other or name nothing usable."""

    exit_code = 2


class ManifestError(AcreleaseError):
    """Raised by ``manifest.load`` (and edits) when ``releases.toml`` is missing, is not TOML or
    breaks the schema. ``problems`` holds every problem found, each already prefixed with
    ``file: toml.path:``, so a user fixes them all in one go."""

    exit_code = 3

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems: tuple[str, ...] = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__("\n".join(self.problems))


class ImageError(AcreleaseError):
    """Raised when a file is not an ESP image acrelease may serve over the air: not an ESP
    image at all, truncated, a merged full-flash image, the wrong chip, and so on."""

    exit_code = 4


class VersionError(AcreleaseError):
    """Raised for a version that is not Semantic Versioning, or one that already exists."""

    exit_code = 5


class CatalogError(AcreleaseError):
    """Raised when publishing cannot proceed: a conflicting re-publish, a broken index,
    a catalog that cannot be written (read-only, disk full) or is locked by another publish."""

    exit_code = 6


class BuildError(AcreleaseError):
    """Raised when a PlatformIO or Arduino build fails or its outputs are not acceptable.
    ``output_tail`` carries the last lines of the tool's output, shown under the message."""

    exit_code = 7

    def __init__(self, message: str, output_tail: str = "") -> None:
        super().__init__(message)
        self.output_tail = output_tail


class AccessError(AcreleaseError):
    """Raised when a credentials or allowlist file is unreadable or malformed, or an ``auth`` edit
    is not possible. The message names ``file[:line]`` and never contains a secret."""

    exit_code = 9


class ServeError(AcreleaseError):
    """Raised when the update server cannot start (address in use, unreadable catalog...)."""

    exit_code = 8


class FleetError(AcreleaseError):
    """Raised by the fleet commands (``devices``, ``rollout``, ``pin``...): a malformed MAC, an
    unknown device or release, a rollout change that is not possible, or a fleet store that cannot
    be opened, read or written. The message names the store or the device and what to do."""

    exit_code = 10
