"""The application service: async command handlers between the API and the pure domain."""
