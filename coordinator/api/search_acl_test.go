package api

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// TestSearchACLRules: the search RPCs follow the job rules: submitting and cancelling
// need the submit role in the search's namespace, reading the read role; a
// namespace-limited token sees only its namespaces' searches.
func TestSearchACLRules(t *testing.T) {
	b := newBackend(t)
	if _, err := b.Apply(context.Background(), &cohortv1.Command{Kind: &cohortv1.Command_Search{Search: &cohortv1.SearchCommand{
		Op: &cohortv1.SearchCommand_Submit{Submit: &cohortv1.Search{Id: "search-b", Namespace: "team-b", IdempotencyKey: "sk",
			Trials: []*cohortv1.SearchTrial{{Index: 0, Job: &cohortv1.Job{Id: "search-b-t0", Namespace: "team-b"}}}}},
	}}}); err != nil {
		t.Fatal(err)
	}
	a := NewACL(ACLConfig{
		Tokens: []Token{
			NewToken("reader", RoleRead, readSecret), NewToken("submitter", RoleSubmit, submitSecret),
			NewToken("team-a", RoleSubmit, teamSecret, "team-a"), NewToken("root", RoleAdmin, adminSecret),
			NewToken("agents", RoleAgent, agentSecret),
		},
		SearchNamespace: func(spec []byte) (string, error) {
			ns, _ := strings.CutPrefix(string(spec), "namespace: ")
			return ns, nil
		},
		State:  b.State,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	const (
		ok   = codes.OK
		deny = codes.PermissionDenied
	)
	type want struct{ read, submit, team, admin, agent codes.Code }
	rows := []struct {
		method string
		req    any
		want   want
	}{
		{cohortv1.SearchService_SubmitSearch_FullMethodName, &cohortv1.SubmitSearchRequest{SpecYaml: []byte("namespace: team-a")}, want{deny, ok, ok, ok, deny}},
		{cohortv1.SearchService_SubmitSearch_FullMethodName, &cohortv1.SubmitSearchRequest{SpecYaml: []byte("namespace: team-b")}, want{deny, ok, deny, ok, deny}},
		{cohortv1.SearchService_CancelSearch_FullMethodName, &cohortv1.CancelSearchRequest{Id: "search-b"}, want{deny, ok, deny, ok, deny}},
		{cohortv1.SearchService_GetSearch_FullMethodName, &cohortv1.GetSearchRequest{Id: "search-b"}, want{ok, ok, deny, ok, deny}},
		{cohortv1.SearchService_ListSearches_FullMethodName, &cohortv1.ListSearchesRequest{Namespace: "team-b"}, want{ok, ok, deny, ok, deny}},
		{cohortv1.SearchService_ListSearches_FullMethodName, &cohortv1.ListSearchesRequest{}, want{ok, ok, ok, ok, deny}},
	}
	unary := a.UnaryServerInterceptor()
	for _, row := range rows {
		for _, c := range []struct {
			who, secret string
			want        codes.Code
		}{
			{"read", readSecret, row.want.read}, {"submit", submitSecret, row.want.submit}, {"team-a", teamSecret, row.want.team},
			{"admin", adminSecret, row.want.admin}, {"agent", agentSecret, row.want.agent}, {"none", "", codes.Unauthenticated},
		} {
			_, err := unary(withToken(c.secret), row.req, &grpc.UnaryServerInfo{FullMethod: row.method},
				func(context.Context, any) (any, error) { return &cohortv1.ListSearchesResponse{}, nil })
			if got := status.Code(err); got != c.want {
				t.Errorf("%s %v as %s: %v, want %v", row.method, row.req, c.who, err, c.want)
			}
		}
	}
	resp, err := unary(withToken(teamSecret), &cohortv1.ListSearchesRequest{}, &grpc.UnaryServerInfo{FullMethod: cohortv1.SearchService_ListSearches_FullMethodName},
		func(context.Context, any) (any, error) {
			return &cohortv1.ListSearchesResponse{Searches: []*cohortv1.Search{{Id: "a1", Namespace: "team-a"}, {Id: "b1", Namespace: "team-b"}}}, nil
		})
	var ids []string
	for _, s := range resp.(*cohortv1.ListSearchesResponse).GetSearches() {
		ids = append(ids, s.Id)
	}
	if err != nil || !slices.Equal(ids, []string{"a1"}) {
		t.Fatalf("team-a token lists %v (%v), want [a1]", ids, err)
	}
}
