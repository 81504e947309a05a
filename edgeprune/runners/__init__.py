"""Runners: measure an artifact on the host, a phone over adb, or a board over ssh."""
