package node

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
	"github.com/cohort-dev/cohort/web"
)

var _ web.SearchSource = (*webSource)(nil)

// ListSearches implements web.SearchSource.
func (s *webSource) ListSearches(ctx context.Context) ([]*cohortv1.Search, error) {
	if s.searches == nil {
		return nil, fmt.Errorf("list searches: %w", web.ErrNotFound)
	}
	resp, err := s.searches.ListSearches(s.callCtx(ctx), &cohortv1.ListSearchesRequest{})
	if err != nil {
		return nil, fmt.Errorf("list searches: %w", err)
	}
	return resp.GetSearches(), nil
}

// GetSearch implements web.SearchSource; an unknown search is web.ErrNotFound.
func (s *webSource) GetSearch(ctx context.Context, id string) (*cohortv1.GetSearchResponse, error) {
	if s.searches == nil {
		return nil, fmt.Errorf("get search %s: %w", id, web.ErrNotFound)
	}
	resp, err := s.searches.GetSearch(s.callCtx(ctx), &cohortv1.GetSearchRequest{Id: id})
	if err != nil {
		switch status.Code(err) {
		case codes.NotFound, codes.InvalidArgument:
			return nil, fmt.Errorf("%s: %w", status.Convert(err).Message(), web.ErrNotFound)
		}
		return nil, fmt.Errorf("get search %s: %w", id, err)
	}
	return resp, nil
}
