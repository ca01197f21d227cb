from tests.support.cloud_env import clean_cloud_env

__all__ = ["clean_cloud_env"]
