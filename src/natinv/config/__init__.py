"""Parameters: the schema (natinv.config.schema), loading and merging params files (loader) and the checks across
keys (checks). Import from here."""
from natinv.config.loader import (config_from_dict, file_origins, load_config, method_bases, read_params_file, resolved_text,
                                  retype_lists, write_resolved)
from natinv.config.schema import (Config, CoTrainConfig, DAFLConfig, DataConfig, DFADConfig, DIConfig, EngineConfig, MetaConfig,
                                  JobThreads, KDConfig, MethodConfig, MetricsConfig, ModelSpec, NIConfig, PruneConfig,
                                  ScratchConfig, SynthesisConfig, TeacherConfig)

__all__ = ["Config", "CoTrainConfig", "MetaConfig", "DAFLConfig", "DataConfig", "DFADConfig", "DIConfig", "EngineConfig", "JobThreads",
           "KDConfig", "MethodConfig", "MetricsConfig", "ModelSpec", "NIConfig", "PruneConfig", "ScratchConfig",
           "SynthesisConfig", "TeacherConfig", "config_from_dict", "file_origins", "load_config", "method_bases", "read_params_file", "resolved_text", "retype_lists",
           "write_resolved"]
