"""The paper's networks and the family's baselines, built by name: `create_model('inception_resnet_v2')`."""
from . import baselines, inception_resnet, inception_v4  # noqa: F401  (registers the models)
from .base import INCEPTION_MEAN, INCEPTION_STD, InceptionBase
from .inception_resnet import InceptionResNetV1, InceptionResNetV2
from .inception_v4 import InceptionV4
from .registry import create_model, list_models

__all__ = ['INCEPTION_MEAN', 'INCEPTION_STD', 'InceptionBase', 'InceptionResNetV1', 'InceptionResNetV2',
           'InceptionV4', 'create_model', 'list_models']
