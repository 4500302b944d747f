"""Local stand-ins for the outside systems, used by the tests and `kqlwatch demo`:
Azurite (Table Storage), an HTTPS Log Analytics query API, and a Teams webhook receiver."""
