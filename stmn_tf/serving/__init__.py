"""SavedModel export module, signatures and serving clients."""
