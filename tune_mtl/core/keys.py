"""Result and config keys shared by the trainable, the searchers, the trackers and the reports.

Dependency-free and in one place, so that every view of a search reads the same names.
"""

OBJECTIVE = "val/objective"  # what every trial reports each epoch
TEST_OBJECTIVE = "test/objective"
DIVERGED = "diverged"  # a trial's last result is flagged with this when its loss became non-finite
FAILURE_REASON = "failure_reason"
# A trial's last result carries this (the sentence) when the trial raised a UserError: a configuration error
# that every retry would repeat, so the trial ends at once and the driver ends the search with the sentence.
USER_ERROR = "user_error"

# One score per trial, everywhere: the best validation objective over the epochs run so far (early-stopping
# selection). Optuna is told it, Tune's best trial uses it, and the summary, report, plots and W&B show it.
SCORE = "score"
SCORE_EPOCH = "score_epoch"  # the epoch (1-based) that `score` comes from; its checkpoint is kept
AT_SCORE = "at_score/"  # prefix: every val/ and test/ metric at the scored epoch, e.g. at_score/test/objective

# Keys the search driver puts into every trial's config (besides the trial's own hyperparameters).
TRIAL_NAME = "trial_name"  # "<strategy>-<n>": folder, TensorBoard run, W&B run and Optuna trial share it
TRACKING = "tracking"  # how the trial logs to W&B itself (see search/tracking.py)
