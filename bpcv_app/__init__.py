"""The ``bpcv`` command: CLI, demo, report and monitor. It sits above the roles (edge_agent, coordinator,
broker, deploy) and the kernel (bpcv); nothing imports it (the import-linter contracts in pyproject.toml)."""
