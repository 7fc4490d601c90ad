"""A plugin whose import fails."""

print("about to fail")
raise RuntimeError("this plugin cannot be imported")
