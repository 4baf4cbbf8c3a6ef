package api

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cohort-dev/cohort/coordinator/fsm"
	"github.com/cohort-dev/cohort/coordinator/search"
	"github.com/cohort-dev/cohort/coordinator/server"
	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// SearchConfig configures the SearchService handlers.
type SearchConfig struct {
	Config
	// ExpandSearch parses and validates a Search spec and expands it into a search
	// with every trial's parameters and TrainingJob spec (trial.job.spec_yaml); its
	// error message reaches the user verbatim. Required by SubmitSearch.
	ExpandSearch func(spec []byte) (*cohortv1.Search, error)
}

// searchService implements cohortv1.SearchServiceServer.
type searchService struct {
	cohortv1.UnimplementedSearchServiceServer
	b      Backend
	cfg    SearchConfig
	adm    *server.Admission
	logger *slog.Logger
}

// NewSearchService returns the SearchService handlers over b.
func NewSearchService(b Backend, cfg SearchConfig) cohortv1.SearchServiceServer {
	cfg.Config = cfg.Config.withBackendClock(b).withDefaults()
	logger := cfg.Logger.With("component", "api.search")
	adm := server.NewAdmission(server.AdmissionConfig{ParseSpec: cfg.ParseSpec, MaxSpecBytes: cfg.MaxSpecBytes, Now: cfg.Now, Logger: logger})
	return &searchService{b: b, cfg: cfg, adm: adm, logger: logger}
}

// SubmitSearch expands the spec (its trials' parameters drawn from spec.seed here, in
// the handler, never in the FSM), admits every trial's job as SubmitJob would (quota,
// capacity), fixes the trials' job IDs and proposes the search. A retry with the same
// idempotency key returns the first search with created=false.
func (s *searchService) SubmitSearch(ctx context.Context, req *cohortv1.SubmitSearchRequest) (*cohortv1.SubmitSearchResponse, error) {
	if len(req.IdempotencyKey) > maxIdempotencyKeyLen {
		return nil, toStatus(fmt.Errorf("%w: idempotency_key is longer than %d bytes", ErrInvalidArgument, maxIdempotencyKeyLen))
	}
	if len(req.SpecYaml) > s.cfg.MaxSpecBytes {
		return nil, toStatus(fmt.Errorf("%w: spec is %d bytes; the limit is %d", ErrInvalidArgument, len(req.SpecYaml), s.cfg.MaxSpecBytes))
	}
	if s.cfg.ExpandSearch == nil {
		return nil, toStatus(fmt.Errorf("api: submit search: no search parser configured"))
	}
	key := req.IdempotencyKey
	if key == "" {
		key = "auto-" + randomHex(16)
	}
	return leaderCall(ctx, s.cfg.Config, func(ctx context.Context) (*cohortv1.SubmitSearchResponse, error) {
		if existing, err := s.b.State().Snapshot().SearchByIdempotencyKey(nil, key); err != nil {
			return nil, err
		} else if existing != nil {
			return &cohortv1.SubmitSearchResponse{Search: existing}, nil
		}
		sr, err := s.admit(req, key)
		if err != nil {
			return nil, err
		}
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_Search{Search: &cohortv1.SearchCommand{
			Op: &cohortv1.SearchCommand_Submit{Submit: sr},
		}}})
		if err != nil {
			return nil, err
		}
		res, ok := out.(*fsm.SubmitSearchResult)
		if !ok {
			return nil, fmt.Errorf("api: submit search: unexpected response %T", out)
		}
		if res.Created {
			s.logger.Info("search submitted", "search", res.Search.Id, "namespace", res.Search.Namespace,
				"trials", len(res.Search.Trials), "algorithm", res.Search.Algorithm)
		}
		return &cohortv1.SubmitSearchResponse{Search: res.Search, Created: res.Created}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.SubmitSearchResponse, error) {
		fwd := proto.Clone(req).(*cohortv1.SubmitSearchRequest)
		fwd.IdempotencyKey = key
		return cohortv1.NewSearchServiceClient(c).SubmitSearch(ctx, fwd)
	})
}

// admit expands the spec and admits every trial's job.
func (s *searchService) admit(req *cohortv1.SubmitSearchRequest, key string) (*cohortv1.Search, error) {
	sr, err := s.cfg.ExpandSearch(req.SpecYaml)
	if err != nil {
		return nil, &searchSpecError{err: err}
	}
	sr.Id = newSearchID(sr.Name)
	sr.SpecYaml = req.SpecYaml
	sr.IdempotencyKey = key
	sr.SubmitTimeUnixNano = s.cfg.Now().UnixNano()
	snap := s.b.State().Snapshot()
	for _, t := range sr.Trials {
		sub := &server.Submission{Spec: t.GetJob().GetSpecYaml(), IdempotencyKey: key + "/trial/" + strconv.Itoa(int(t.Index)),
			WaitForCapacity: req.WaitForCapacity}
		job, err := s.adm.Admit(snap, sub)
		if err != nil {
			return nil, fmt.Errorf("trial %d: %w", t.Index, err)
		}
		job.Id = fmt.Sprintf("%s-t%d", sr.Id, t.Index)
		job.SearchId, job.SearchTrial = sr.Id, t.Index
		job.SubmitTimeUnixNano = 0 // set when the trial starts
		t.Job = job
	}
	return sr, nil
}

// newSearchID returns "<name>-<8 hex>" with the name reduced to [a-z0-9-].
func newSearchID(name string) string {
	base := strings.Trim(jobIDUnsafe.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if base == "" {
		base = "search"
	}
	if len(base) > 48 {
		base = base[:48]
	}
	return base + "-" + randomHex(4)
}

// GetSearch returns a search with its started trials' jobs and its best trial so far.
func (s *searchService) GetSearch(ctx context.Context, req *cohortv1.GetSearchRequest) (*cohortv1.GetSearchResponse, error) {
	if err := checkID("id", req.Id); err != nil {
		return nil, toStatus(err)
	}
	return readCall(ctx, s.b, s.cfg.Config, func() (*cohortv1.GetSearchResponse, error) {
		snap := s.b.State().Snapshot()
		sr, err := snap.SearchByID(nil, req.Id)
		if err != nil {
			return nil, err
		}
		if sr == nil {
			return nil, fmt.Errorf("%w: search %q", fsm.ErrNotFound, req.Id)
		}
		resp := &cohortv1.GetSearchResponse{Search: sr, BestTrial: -1}
		jobs := map[string]*cohortv1.Job{}
		for _, t := range sr.Trials {
			if !t.Started {
				continue
			}
			job, err := snap.JobByID(nil, t.Job.GetId())
			if err != nil {
				return nil, err
			}
			if job != nil {
				jobs[job.Id] = job
				resp.Jobs = append(resp.Jobs, job)
			}
		}
		resp.BestTrial = int32(search.Best(sr, jobs))
		return resp, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.GetSearchResponse, error) {
		return cohortv1.NewSearchServiceClient(c).GetSearch(ctx, req)
	})
}

// ListSearches returns the searches of a namespace (all when empty), oldest first.
func (s *searchService) ListSearches(ctx context.Context, req *cohortv1.ListSearchesRequest) (*cohortv1.ListSearchesResponse, error) {
	return readCall(ctx, s.b, s.cfg.Config, func() (*cohortv1.ListSearchesResponse, error) {
		all, err := s.b.State().Searches(nil)
		if err != nil {
			return nil, err
		}
		if req.Namespace != "" {
			all = slices.DeleteFunc(all, func(x *cohortv1.Search) bool { return x.Namespace != req.Namespace })
		}
		slices.SortFunc(all, func(a, b *cohortv1.Search) int {
			return cmp.Or(cmp.Compare(a.SubmitTimeUnixNano, b.SubmitTimeUnixNano), cmp.Compare(a.Id, b.Id))
		})
		return &cohortv1.ListSearchesResponse{Searches: all}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.ListSearchesResponse, error) {
		return cohortv1.NewSearchServiceClient(c).ListSearches(ctx, req)
	})
}

// CancelSearch cancels a running search and its unfinished trials; a search that has
// ended is returned as it is.
func (s *searchService) CancelSearch(ctx context.Context, req *cohortv1.CancelSearchRequest) (*cohortv1.CancelSearchResponse, error) {
	if err := checkID("id", req.Id); err != nil {
		return nil, toStatus(err)
	}
	if len(req.Reason) > maxReasonLen {
		return nil, toStatus(fmt.Errorf("%w: reason is longer than %d bytes", ErrInvalidArgument, maxReasonLen))
	}
	return leaderCall(ctx, s.cfg.Config, func(ctx context.Context) (*cohortv1.CancelSearchResponse, error) {
		out, err := s.b.Apply(ctx, &cohortv1.Command{Kind: &cohortv1.Command_Search{Search: &cohortv1.SearchCommand{
			Op: &cohortv1.SearchCommand_Cancel{Cancel: &cohortv1.CancelSearchOp{SearchId: req.Id, Reason: req.Reason}},
		}}})
		if err != nil {
			return nil, err
		}
		sr, ok := out.(*cohortv1.Search)
		if !ok {
			return nil, fmt.Errorf("api: cancel search: unexpected response %T", out)
		}
		return &cohortv1.CancelSearchResponse{Search: sr}, nil
	}, func(ctx context.Context, c grpc.ClientConnInterface) (*cohortv1.CancelSearchResponse, error) {
		return cohortv1.NewSearchServiceClient(c).CancelSearch(ctx, req)
	})
}

// searchNamespace is the namespace a search RPC acts in: the submitted spec's
// metadata.namespace, or the named search's (from local state).
func searchNamespace(a *ACL, req any) (string, bool) {
	switch r := req.(type) {
	case *cohortv1.SubmitSearchRequest:
		if a.cfg.SearchNamespace == nil {
			return "", true
		}
		ns, err := a.cfg.SearchNamespace(r.GetSpecYaml())
		if err != nil || ns == "" {
			return "", false // the handler refuses the spec with its own message
		}
		return ns, true
	case interface{ GetId() string }:
		if a.cfg.State == nil {
			return "", true
		}
		store := a.cfg.State()
		if store == nil {
			return "", true
		}
		sr, err := store.SearchByID(nil, r.GetId())
		if err != nil || sr == nil {
			return "", false
		}
		return sr.Namespace, true
	}
	return "", false
}

// listSearchNamespace is the namespace a search list asks for; an empty one is allowed
// and its result filtered (filterSearches).
func listSearchNamespace(_ *ACL, req any) (string, bool) {
	r, ok := req.(*cohortv1.ListSearchesRequest)
	if !ok || r.GetNamespace() == "" {
		return "", false
	}
	return r.GetNamespace(), true
}

// filterSearches keeps the searches of the token's namespaces.
func filterSearches(tok *Token, resp any) {
	r, ok := resp.(*cohortv1.ListSearchesResponse)
	if !ok {
		return
	}
	r.Searches = slices.DeleteFunc(r.Searches, func(x *cohortv1.Search) bool { return !tok.allowsNamespace(x.GetNamespace()) })
}

// searchSpecError is a Search spec the parser refused; its message is the parser's.
type searchSpecError struct{ err error }

func (e *searchSpecError) Error() string { return "invalid search spec:\n" + e.err.Error() }

// Unwrap returns server.ErrRefused (InvalidArgument) and the parser's error.
func (e *searchSpecError) Unwrap() []error { return []error{server.ErrRefused, e.err} }
