"""Model catalog, fleet model mirror and the test upstream hub."""
