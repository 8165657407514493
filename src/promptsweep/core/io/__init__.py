"""Reading and writing files within bounds, and the errors that name the file, line and key."""
