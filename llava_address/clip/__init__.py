"""AddressCLIP: contrastive image–address model (transformers CLIPModel backbone).

Public entry points (import from the submodules, they are light to import):
- :mod:`.config`      ``AddressCLIPConfig`` + ``load_clip_config``
- :mod:`.losses`      ``AddressLoss``, ``SemanticLoss``, ``GeoLoss``, ``AddressCLIPLoss``
- :mod:`.train`       ``train(cfg, data_dir, output_dir, resume=False)``
- :mod:`.locator`     ``AddressLocator.from_pretrained(dir).locate(images, candidates, k)``
- :mod:`.evaluate`    ``evaluate(model_dir, data_dir, split)``
- :mod:`.export`      ``load_vision_tower(clip_dir) -> (CLIPVisionModel, CLIPImageProcessor)``
"""
