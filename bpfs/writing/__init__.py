"""The drop boxes that write to the account, and the upload machinery under them."""
