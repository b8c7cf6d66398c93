"""Results back to the PACS: the delivery task (the work is app.services.delivery's)."""
