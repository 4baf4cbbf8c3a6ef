package worker

import (
	"errors"

	"github.com/cohort-dev/cohort/storage"
)

// PermanentError marks a task failure that no retry, restart or shrink can cure: the
// job's data is missing or unreadable as its spec says (a label or column not in the
// data, a file that does not parse), or the model cannot be built on it. The runner
// reports such a failure as permanent and the coordinator fails the job at once.
type PermanentError struct{ Err error }

func (e *PermanentError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *PermanentError) Unwrap() error { return e.Err }

// IsPermanent reports whether err is (or wraps) a *PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// transientOpenError marks a failure to open a data URI that may pass on a retry (a
// storage endpoint that did not answer), as opposed to a missing object or a path
// outside the data roots.
type transientOpenError struct{ err error }

func (e *transientOpenError) Error() string { return e.err.Error() }
func (e *transientOpenError) Unwrap() error { return e.err }

// markOpenError wraps an error of opening a data URI as transient unless it says the
// object is missing or refused (outside the data roots).
func markOpenError(err error) error {
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrOutsideRoots) {
		return err
	}
	return &transientOpenError{err: err}
}

// dataFailure is the error of loading a job's data or building its model on it:
// permanent unless opening the data failed for a reason a retry may cure.
func dataFailure(err error) error {
	var t *transientOpenError
	if err == nil || errors.As(err, &t) {
		return err
	}
	return &PermanentError{Err: err}
}
