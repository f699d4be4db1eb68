// The operations of GraphiQL's first tab. Each stays well inside the service's limits (depth,
// aliases, query cost): no list nested in another list.

export const EXAMPLES = `# The restaurant network's GraphQL API. Put the cursor in an
# operation and press Ctrl-Enter (or press ▶ and pick one).
# The Documentation Explorer (book icon) describes every field.
#
# Authentication on? Paste {"Authorization": "Bearer <token>"}
# under Headers below: queries and mutations send it as a
# header, subscriptions in their websocket's connection_init.

# The locations now, ordered by id.
query Locations {
  locations {
    id
    streetAddress
    city
    employeeCount
    version
  }
}

# Time travel: the network as it was right after the commit
# at position 1 (the first event in the log). Or give a time:
# asOf: "2030-01-01T12:00:00Z" instead of atPosition.
query LocationsAtPosition {
  locations(atPosition: 1) {
    id
    city
    employeeCount
    version
  }
}

# Open a location (its id: the next free one). An expected
# failure (invalid input, say) is a member of the result union.
mutation OpenLocation {
  createLocation(
    input: {
      streetAddress: "1 Main St"
      city: "Springfield"
      state: "IL"
      postalCode: "62701"
    }
  ) {
    __typename
    ... on LocationPayload {
      position
      location {
        id
        city
      }
    }
    ... on Error {
      code
      message
    }
  }
}

# Every change to a location, pushed once the read model holds
# it. Run it, then run OpenLocation in another tab.
subscription LocationChanges {
  locationChanged {
    position
    kind
    locationId
    location {
      city
      employeeCount
    }
  }
}
`;
