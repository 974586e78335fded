"""What the account holds (the catalog: cached listings) and how it is shown as paths (the tree)."""
