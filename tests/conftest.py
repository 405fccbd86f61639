import pytest


@pytest.fixture(scope='session')
def cache_dir(tmp_path_factory) -> str:
    """One generated demo dataset cache for every test that trains."""
    return str(tmp_path_factory.mktemp('cache'))


def pytest_configure(config):
    # train.py registers the schema the same way; tests that compose conf/ need it too
    from hydra.core.config_store import ConfigStore

    from inception_train.config import TrainConfig
    ConfigStore.instance().store(name='train_schema', node=TrainConfig)
