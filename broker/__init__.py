"""The message bus: mosquitto with the project's config when installed, else the embedded broker (amqtt)."""
