"""A CQRS / event-sourcing GraphQL service for a network of restaurants."""
