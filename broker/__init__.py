"""The message bus: mosquitto with the project's config when installed, else an embedded Python broker."""
