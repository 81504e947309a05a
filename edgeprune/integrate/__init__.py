"""Put a build's models into app projects: `integrate_android` (Gradle) and `integrate_ios` (Xcode).

These read a dist/ folder's manifests and artifacts only (checked against the manifest schema and their sha256),
never the pipeline's objects.
"""

from __future__ import annotations

from edgeprune.integrate.android import integrate_android
from edgeprune.integrate.edits import IntegrationResult
from edgeprune.integrate.ios import integrate_ios

__all__ = ["IntegrationResult", "integrate_android", "integrate_ios"]
