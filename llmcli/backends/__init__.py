"""Model backends. Importing this package is cheap: heavy libraries load inside each backend."""
