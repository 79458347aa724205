pytest_plugins = ["retain_kit.testing"]
