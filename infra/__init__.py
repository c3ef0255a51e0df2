"""ferry's Pulumi program: `pulumi up` turns the stack config into hosts ferry can deploy to.

`__main__.py` reads top to bottom; the resources live in `components/`, the pure parts
(stack config, names and tags, IAM documents, cloud-init user data) in plain modules that the
unit tests check exactly.
"""
