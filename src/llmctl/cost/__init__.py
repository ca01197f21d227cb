"""Cost of a month on each cloud: dated price catalog, live prices, the pure model, its report."""
