"""shopipe receiver: verifies Shopify webhooks, stores them in the bucket, announces them."""
