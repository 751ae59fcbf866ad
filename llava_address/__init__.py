"""llava-address: street-view photo -> street address (AddressCLIP + LLaVA-1.5).

Kept import-light on purpose: `import llava_address` must not pull torch, so the
data stage can use `llava_address.common` without loading model code.
"""

__version__ = "0.1.0"
