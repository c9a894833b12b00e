"""Build-only tools: the demo model builder and the TFLite writer. The service never imports them."""
