"""The operations both faces call: they write intents to the store and read state."""
