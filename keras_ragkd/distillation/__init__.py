"""Knowledge distillation for Keras models: `Distiller`, its losses, `TeacherCache`."""

from keras_ragkd.distillation.callbacks import DistillationScheduler
from keras_ragkd.distillation.distiller import Distiller
from keras_ragkd.distillation.divergences import kd_divergence
from keras_ragkd.distillation.divergences import topk_kd_divergence
from keras_ragkd.distillation.keras_compat import FeatureDistillation
from keras_ragkd.distillation.keras_compat import LogitsDistillation
from keras_ragkd.distillation.losses import DistillationLoss
from keras_ragkd.distillation.losses import ForwardKL
from keras_ragkd.distillation.losses import GeneralizedJSD
from keras_ragkd.distillation.losses import ReverseKL
from keras_ragkd.distillation.losses import TopKKL
from keras_ragkd.distillation.losses import TopKTailKL
from keras_ragkd.distillation.on_policy import OnPolicyBatches
from keras_ragkd.distillation.on_policy import on_policy_schedule
from keras_ragkd.distillation.teacher_cache import TeacherCache
