"""Open311 GeoReport v2 (`/open311/v2/`): categories as services, problems as service requests."""
