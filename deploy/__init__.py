"""Putting agents onto edge devices: per-device bundles, systemd unit, installer, first-boot files."""
