"""data_gen: (image, GPS) -> address-labelled dataset. No torch model code lives here."""
