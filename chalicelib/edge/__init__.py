"""The HTTP edge: turning requests into calls and results and errors into HTTP answers."""
