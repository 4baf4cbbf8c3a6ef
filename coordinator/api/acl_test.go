package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"gopkg.in/yaml.v3"

	cohortv1 "github.com/cohort-dev/cohort/proto/cohort/v1"
)

// notServedByCoordinator lists the cohort.v1 services the coordinator does not serve
// (so the ACL does not cover them).
var notServedByCoordinator = map[string]string{
	"cohort.v1.ParameterService": "served by parameter-server nodes (data plane), not the coordinator",
	"cohort.v1.ReplicaService":   "served by parameter-server nodes (primary to backup), not the coordinator",
}

// TestEveryRPCHasAnACLRule walks every service of the cohort.v1 proto package: each RPC
// the coordinator serves must have a rule in methodRules, and every rule must name an
// RPC that exists. A new RPC without a rule would be refused to everybody at run time.
func TestEveryRPCHasAnACLRule(t *testing.T) {
	served := map[string]bool{}
	services := 0
	protoregistry.GlobalFiles.RangeFilesByPackage("cohort.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			if _, skip := notServedByCoordinator[string(sd.FullName())]; skip {
				continue
			}
			services++
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				full := fmt.Sprintf("/%s/%s", sd.FullName(), md.Name())
				served[full] = true
				if _, ok := methodRules[full]; !ok {
					t.Errorf("RPC %s has no ACL rule: add it to methodRules in coordinator/api/acl.go "+
						"(RoleRead for a read-only get/list/watch/status/plan/logs RPC; RoleSubmit, with a namespace "+
						"function, for an RPC that changes one job; RoleAdmin for cluster-wide changes; RoleAgent for "+
						"node agents), and a line to TestACLRuleTable; until then every caller gets PermissionDenied "+
						"when ACLs are on", full)
				}
			}
		}
		return true
	})
	if services < 3 {
		t.Fatalf("found %d coordinator services in cohort.v1; want JobService, AgentService, ClusterService", services)
	}
	for m := range methodRules {
		if !served[m] {
			t.Errorf("methodRules has a rule for %s, which no cohort.v1 service defines: remove or rename it", m)
		}
	}
}

// TestNamespaceRulesAreUnary: namespace functions see the request, which a stream
// interceptor does not have.
func TestNamespaceRulesAreUnary(t *testing.T) {
	streams := map[string]bool{}
	for _, sd := range []grpc.ServiceDesc{cohortv1.JobService_ServiceDesc, cohortv1.AgentService_ServiceDesc, cohortv1.ClusterService_ServiceDesc} {
		for _, s := range sd.Streams {
			streams["/"+sd.ServiceName+"/"+s.StreamName] = true
		}
	}
	for m, r := range methodRules {
		if r.namespace != nil && streams[m] {
			t.Errorf("%s is a stream but its rule has a namespace function", m)
		}
	}
}

const (
	readSecret   = "read-secret-0123456789"
	submitSecret = "submit-secret-0123456789"
	teamSecret   = "team-a-secret-0123456789"
	adminSecret  = "admin-secret-0123456789"
	agentSecret  = "agent-secret-0123456789"
)

func testACL(t *testing.T) *ACL {
	t.Helper()
	b := newBackend(t)
	// A job in namespace team-b to cancel.
	if _, err := b.Apply(context.Background(), &cohortv1.Command{Kind: &cohortv1.Command_SubmitJob{SubmitJob: &cohortv1.SubmitJobCommand{
		Job: &cohortv1.Job{Id: "job-b", Name: "b", Namespace: "team-b", State: cohortv1.JobState_JOB_STATE_PENDING, WorkerCount: 1, IdempotencyKey: "k"},
	}}}); err != nil {
		t.Fatal(err)
	}
	return NewACL(ACLConfig{
		Tokens: []Token{
			NewToken("reader", RoleRead, readSecret),
			NewToken("submitter", RoleSubmit, submitSecret),
			NewToken("team-a", RoleSubmit, teamSecret, "team-a"),
			NewToken("root", RoleAdmin, adminSecret),
			NewToken("agents", RoleAgent, agentSecret),
		},
		ParseSpec: func(spec []byte) (*cohortv1.Job, error) {
			ns, _ := strings.CutPrefix(string(spec), "namespace: ")
			return &cohortv1.Job{Name: "x", Namespace: ns}, nil
		},
		State:  b.State,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
}

func withToken(secret string) context.Context {
	ctx := context.Background()
	if secret == "" {
		return ctx
	}
	return metadata.NewIncomingContext(ctx, metadata.Pairs(AuthorizationHeader, "Bearer "+secret))
}

// TestACLRuleTable runs representative RPCs of every kind through the unary and stream
// interceptors with every role.
func TestACLRuleTable(t *testing.T) {
	a := testACL(t)
	const (
		ok     = codes.OK
		unauth = codes.Unauthenticated
		deny   = codes.PermissionDenied
	)
	type want struct{ none, read, submit, team, admin, agent codes.Code }
	rows := []struct {
		method string
		req    any // nil: a stream
		want   want
	}{
		{cohortv1.JobService_ListJobs_FullMethodName, &cohortv1.ListJobsRequest{}, want{unauth, ok, ok, ok, ok, deny}},
		{cohortv1.JobService_GetJob_FullMethodName, &cohortv1.GetJobRequest{}, want{unauth, ok, ok, ok, ok, deny}},
		{cohortv1.JobService_PlanJob_FullMethodName, &cohortv1.PlanJobRequest{}, want{unauth, ok, ok, ok, ok, deny}},
		{cohortv1.JobService_WatchJob_FullMethodName, nil, want{unauth, ok, ok, ok, ok, deny}},
		{cohortv1.JobService_ListNodes_FullMethodName, &cohortv1.ListNodesRequest{}, want{unauth, ok, ok, ok, ok, deny}},
		{cohortv1.JobService_ListQuotas_FullMethodName, &cohortv1.ListQuotasRequest{}, want{unauth, ok, ok, ok, ok, deny}},
		{cohortv1.ClusterService_ListPeers_FullMethodName, &cohortv1.ListPeersRequest{}, want{unauth, ok, ok, ok, ok, deny}},
		{cohortv1.JobService_SubmitJob_FullMethodName, &cohortv1.SubmitJobRequest{SpecYaml: []byte("namespace: team-a")}, want{unauth, deny, ok, ok, ok, deny}},
		{cohortv1.JobService_SubmitJob_FullMethodName, &cohortv1.SubmitJobRequest{SpecYaml: []byte("namespace: team-b")}, want{unauth, deny, ok, deny, ok, deny}},
		{cohortv1.JobService_SubmitJob_FullMethodName, &cohortv1.SubmitJobRequest{SpecYaml: []byte("no namespace")}, want{unauth, deny, ok, deny, ok, deny}},
		{cohortv1.JobService_CancelJob_FullMethodName, &cohortv1.CancelJobRequest{Id: "job-b"}, want{unauth, deny, ok, deny, ok, deny}},
		// An unknown job: the handler answers NotFound (or the leader decides).
		{cohortv1.JobService_CancelJob_FullMethodName, &cohortv1.CancelJobRequest{Id: "nope"}, want{unauth, deny, ok, ok, ok, deny}},
		{cohortv1.JobService_ResumeJob_FullMethodName, &cohortv1.ResumeJobRequest{Id: "job-b"}, want{unauth, deny, ok, deny, ok, deny}},
		{cohortv1.JobService_ResumeJob_FullMethodName, &cohortv1.ResumeJobRequest{Id: "nope"}, want{unauth, deny, ok, ok, ok, deny}},
		{cohortv1.JobService_JobLogs_FullMethodName, nil, want{unauth, ok, ok, ok, ok, deny}},
		// Reads of another namespace's job are refused to a namespace-limited token.
		{cohortv1.JobService_GetJobReport_FullMethodName, &cohortv1.GetJobReportRequest{Id: "job-b"}, want{unauth, ok, ok, deny, ok, deny}},
		{cohortv1.JobService_GetJob_FullMethodName, &cohortv1.GetJobRequest{Id: "job-b"}, want{unauth, ok, ok, deny, ok, deny}},
		{cohortv1.JobService_GetJob_FullMethodName, &cohortv1.GetJobRequest{Id: "nope"}, want{unauth, ok, ok, ok, ok, deny}},
		{cohortv1.JobService_ListJobs_FullMethodName, &cohortv1.ListJobsRequest{Namespace: "team-b"}, want{unauth, ok, ok, deny, ok, deny}},
		{cohortv1.JobService_ListJobs_FullMethodName, &cohortv1.ListJobsRequest{Namespace: "team-a"}, want{unauth, ok, ok, ok, ok, deny}},
		{cohortv1.JobService_PlanJob_FullMethodName, &cohortv1.PlanJobRequest{SpecYaml: []byte("namespace: team-b")}, want{unauth, ok, ok, deny, ok, deny}},
		{cohortv1.JobService_OverrideGate_FullMethodName, &cohortv1.OverrideGateRequest{Id: "job-b"}, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.JobService_SetQuota_FullMethodName, &cohortv1.SetQuotaRequest{}, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.JobService_SetQueue_FullMethodName, &cohortv1.SetQueueRequest{}, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.JobService_DrainNode_FullMethodName, &cohortv1.DrainNodeRequest{}, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.JobService_SetNodeEligibility_FullMethodName, &cohortv1.SetNodeEligibilityRequest{}, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.ClusterService_Join_FullMethodName, &cohortv1.JoinRequest{}, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.ClusterService_AddVoter_FullMethodName, &cohortv1.AddVoterRequest{}, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.ClusterService_RemovePeer_FullMethodName, &cohortv1.RemovePeerRequest{}, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.ClusterService_TransferLeadership_FullMethodName, &cohortv1.TransferLeadershipRequest{}, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.ClusterService_SnapshotSave_FullMethodName, nil, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.ClusterService_SnapshotRestore_FullMethodName, nil, want{unauth, deny, deny, deny, ok, deny}},
		{cohortv1.AgentService_RegisterNode_FullMethodName, &cohortv1.RegisterNodeRequest{}, want{unauth, deny, deny, deny, ok, ok}},
		{cohortv1.AgentService_Heartbeat_FullMethodName, &cohortv1.HeartbeatRequest{}, want{unauth, deny, deny, deny, ok, ok}},
		{cohortv1.AgentService_ReportTasks_FullMethodName, &cohortv1.ReportTasksRequest{}, want{unauth, deny, deny, deny, ok, ok}},
		{cohortv1.AgentService_WatchAssignments_FullMethodName, nil, want{unauth, deny, deny, deny, ok, ok}},
		// Fail closed: an RPC without a rule is refused to everybody.
		{"/cohort.v1.JobService/NoSuchRPC", &cohortv1.ListJobsRequest{}, want{deny, deny, deny, deny, deny, deny}},
	}
	unary := a.UnaryServerInterceptor()
	stream := a.StreamServerInterceptor()
	for _, row := range rows {
		for _, c := range []struct {
			who, secret string
			want        codes.Code
		}{
			{"none", "", row.want.none}, {"bad", "not-a-token-at-all-xx", row.want.none},
			{"read", readSecret, row.want.read}, {"submit", submitSecret, row.want.submit},
			{"team-a", teamSecret, row.want.team}, {"admin", adminSecret, row.want.admin}, {"agent", agentSecret, row.want.agent},
		} {
			t.Run(strings.TrimPrefix(row.method, "/cohort.v1.")+"/"+c.who, func(t *testing.T) {
				called := false
				var err error
				if row.req == nil {
					err = stream(nil, fakeStream{ctx: withToken(c.secret)}, &grpc.StreamServerInfo{FullMethod: row.method},
						func(any, grpc.ServerStream) error { called = true; return nil })
				} else {
					_, err = unary(withToken(c.secret), row.req, &grpc.UnaryServerInfo{FullMethod: row.method},
						func(context.Context, any) (any, error) { called = true; return nil, nil })
				}
				if got := status.Code(err); got != c.want {
					t.Fatalf("%s as %s: %v, want %v", row.method, c.who, err, c.want)
				}
				if called != (c.want == codes.OK) {
					t.Fatalf("handler called = %v with code %v", called, status.Code(err))
				}
				if status.Code(err) == codes.PermissionDenied && !strings.Contains(err.Error(), row.method) {
					t.Errorf("PermissionDenied %q does not name the RPC", err)
				}
			})
		}
	}
}

// TestACLMessages: refusals say what is needed.
func TestACLMessages(t *testing.T) {
	a := testACL(t)
	unary := a.UnaryServerInterceptor()
	call := func(secret, method string, req any) error {
		_, err := unary(withToken(secret), req, &grpc.UnaryServerInfo{FullMethod: method},
			func(context.Context, any) (any, error) { return nil, nil })
		return err
	}
	err := call(readSecret, cohortv1.JobService_SubmitJob_FullMethodName, &cohortv1.SubmitJobRequest{})
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "SubmitJob") || !strings.Contains(msg, "needs a submit or admin token") || !strings.Contains(msg, `"reader" has role read`) {
		t.Errorf("read token submitting: %q", msg)
	}
	err = call(teamSecret, cohortv1.JobService_SubmitJob_FullMethodName, &cohortv1.SubmitJobRequest{SpecYaml: []byte("namespace: prod")})
	if msg := status.Convert(err).Message(); !strings.Contains(msg, `namespaces team-a only, not "prod"`) {
		t.Errorf("team token in prod: %q", msg)
	}
	err = call("", cohortv1.JobService_ListJobs_FullMethodName, &cohortv1.ListJobsRequest{})
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "COHORT_TOKEN") {
		t.Errorf("no token: %q", msg)
	}
	// Other schemes and a malformed header are no token at all.
	for _, h := range []string{"Basic " + adminSecret, adminSecret, "Bearer"} {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(AuthorizationHeader, h))
		if _, err := unary(ctx, &cohortv1.ListJobsRequest{}, &grpc.UnaryServerInfo{FullMethod: cohortv1.JobService_ListJobs_FullMethodName},
			func(context.Context, any) (any, error) { return nil, nil }); status.Code(err) != codes.Unauthenticated {
			t.Errorf("authorization %q: %v, want Unauthenticated", h, err)
		}
	}
	// The scheme is case-insensitive.
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(AuthorizationHeader, "bearer "+readSecret))
	if _, err := unary(ctx, &cohortv1.ListJobsRequest{}, &grpc.UnaryServerInfo{FullMethod: cohortv1.JobService_ListJobs_FullMethodName},
		func(context.Context, any) (any, error) { return nil, nil }); err != nil {
		t.Errorf("lower-case bearer: %v", err)
	}
}

// TestACLNamespaceFailsClosed: without a spec parser or a state store an ACL cannot
// tell a request's namespace, and refuses tokens limited to namespaces (others pass).
func TestACLNamespaceFailsClosed(t *testing.T) {
	a := NewACL(ACLConfig{
		Tokens: []Token{NewToken("team-a", RoleSubmit, teamSecret, "team-a"), NewToken("submitter", RoleSubmit, submitSecret)},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	unary := a.UnaryServerInterceptor()
	for _, c := range []struct {
		method string
		req    any
	}{
		{cohortv1.JobService_SubmitJob_FullMethodName, &cohortv1.SubmitJobRequest{SpecYaml: []byte("namespace: team-a")}},
		{cohortv1.JobService_CancelJob_FullMethodName, &cohortv1.CancelJobRequest{Id: "job-a"}},
	} {
		call := func(secret string) error {
			_, err := unary(withToken(secret), c.req, &grpc.UnaryServerInfo{FullMethod: c.method},
				func(context.Context, any) (any, error) { return nil, nil })
			return err
		}
		if err := call(teamSecret); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "cannot tell") {
			t.Errorf("%s with a namespace-limited token and no way to tell the namespace: %v", c.method, err)
		}
		if err := call(submitSecret); err != nil {
			t.Errorf("%s with an unlimited submit token: %v", c.method, err)
		}
	}
}

// TestACLMintAndReload: minted tokens survive SetTokens; replaced file tokens stop
// working at once.
func TestACLMintAndReload(t *testing.T) {
	a := testACL(t)
	minted := a.Mint("dashboard@c1", RoleRead)
	if _, err := a.Check(minted, RoleRead); err != nil {
		t.Fatalf("minted token: %v", err)
	}
	if _, err := a.Check(minted, RoleSubmit); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("minted read token submitting: %v", err)
	}
	a.SetTokens([]Token{NewToken("new-admin", RoleAdmin, "brand-new-admin-secret")})
	if _, err := a.Check(adminSecret, RoleRead); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("old admin after reload: %v", err)
	}
	if tok, err := a.Check("brand-new-admin-secret", RoleAdmin); err != nil || tok.Name != "new-admin" {
		t.Fatalf("new admin after reload: %v, %v", tok, err)
	}
	if _, err := a.Check(minted, RoleRead); err != nil {
		t.Fatalf("minted token after reload: %v", err)
	}
}

// TestForwardedAuth: a call forwarded to the leader carries the caller's token.
func TestForwardedAuth(t *testing.T) {
	ctx := withToken(submitSecret)
	md, _ := metadata.FromOutgoingContext(forwardContext(ctx))
	if got := md.Get(AuthorizationHeader); !slices.Equal(got, []string{"Bearer " + submitSecret}) {
		t.Fatalf("forwarded authorization %q", got)
	}
	if got := md.Get(forwardedHeader); len(got) != 1 {
		t.Fatalf("forwarded header %q", got)
	}
	md, _ = metadata.FromOutgoingContext(forwardContext(context.Background()))
	if got := md.Get(AuthorizationHeader); len(got) != 0 {
		t.Fatalf("no token, forwarded authorization %q", got)
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
	req proto.Message // what RecvMsg delivers (nil: nothing)
}

func (s fakeStream) Context() context.Context { return s.ctx }

func (s fakeStream) RecvMsg(m any) error {
	if s.req == nil {
		return io.EOF
	}
	proto.Merge(m.(proto.Message), s.req)
	return nil
}

// TestNamespaceLimitedReads: a token limited to team-a sees only team-a's jobs and
// quotas in lists, and cannot watch or read the logs of team-b's job; unlimited
// tokens see everything.
func TestNamespaceLimitedReads(t *testing.T) {
	a := testACL(t)
	unary := a.UnaryServerInterceptor()
	list := func(secret string) []string {
		resp, err := unary(withToken(secret), &cohortv1.ListJobsRequest{}, &grpc.UnaryServerInfo{FullMethod: cohortv1.JobService_ListJobs_FullMethodName},
			func(context.Context, any) (any, error) {
				return &cohortv1.ListJobsResponse{Jobs: []*cohortv1.Job{{Id: "a1", Namespace: "team-a"}, {Id: "b1", Namespace: "team-b"}, {Id: "a2", Namespace: "team-a"}}}, nil
			})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, j := range resp.(*cohortv1.ListJobsResponse).GetJobs() {
			ids = append(ids, j.GetId())
		}
		return ids
	}
	if got := list(teamSecret); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Errorf("team-a token lists %v, want [a1 a2]", got)
	}
	if got := list(readSecret); len(got) != 3 {
		t.Errorf("an unlimited read token lists %v, want all 3", got)
	}
	resp, err := unary(withToken(teamSecret), &cohortv1.ListQuotasRequest{}, &grpc.UnaryServerInfo{FullMethod: cohortv1.JobService_ListQuotas_FullMethodName},
		func(context.Context, any) (any, error) {
			return &cohortv1.ListQuotasResponse{Quotas: []*cohortv1.Quota{{Namespace: "team-b"}, {Namespace: "team-a"}}}, nil
		})
	if q := resp.(*cohortv1.ListQuotasResponse).GetQuotas(); err != nil || len(q) != 1 || q[0].GetNamespace() != "team-a" {
		t.Errorf("team-a token's quotas: %v, %v", q, err)
	}
	stream := a.StreamServerInterceptor()
	for _, method := range []string{cohortv1.JobService_WatchJob_FullMethodName, cohortv1.JobService_JobLogs_FullMethodName} {
		for _, c := range []struct {
			secret, id string
			want       codes.Code
		}{{teamSecret, "job-b", codes.PermissionDenied}, {readSecret, "job-b", codes.OK}, {teamSecret, "nope", codes.OK}} {
			var req proto.Message = &cohortv1.WatchJobRequest{Id: c.id}
			var into proto.Message = &cohortv1.WatchJobRequest{}
			if method == cohortv1.JobService_JobLogs_FullMethodName {
				req, into = &cohortv1.JobLogsRequest{Id: c.id}, &cohortv1.JobLogsRequest{}
			}
			sent := false
			err := stream(nil, fakeStream{ctx: withToken(c.secret), req: req}, &grpc.StreamServerInfo{FullMethod: method},
				func(_ any, ss grpc.ServerStream) error {
					if err := ss.RecvMsg(into); err != nil {
						return err
					}
					sent = true // the handler would send the job from here on
					return nil
				})
			if status.Code(err) != c.want || sent != (c.want == codes.OK) {
				t.Errorf("%s of %s: err %v, handler went on %v; want %v", method, c.id, err, sent, c.want)
			}
		}
	}
}

func TestParseTokens(t *testing.T) {
	sum := sha256.Sum256([]byte("hashed-secret-0123456789"))
	good := `
- name: ci-team-a
  secret: 0123456789abcdef0123
  role: submit
  namespaces: [team-a, team-b]
- name: ops@example.com
  secret_sha256: ` + hex.EncodeToString(sum[:]) + `
  role: admin
- name: agents
  secret: agent-0123456789abcdef
  role: agent
- name: viewer
  secret: viewer-0123456789abcdef
  role: read
`
	toks, err := ParseTokens([]byte(good))
	if err != nil {
		t.Fatalf("good file: %v", err)
	}
	if len(toks) != 4 || toks[0].Role != RoleSubmit || !slices.Equal(toks[0].Namespaces, []string{"team-a", "team-b"}) || toks[1].Role != RoleAdmin {
		t.Fatalf("parsed %+v", toks)
	}
	a := NewACL(ACLConfig{Tokens: toks})
	if tok, err := a.Check("hashed-secret-0123456789", RoleAdmin); err != nil || tok.Name != "ops@example.com" {
		t.Fatalf("secret_sha256 token: %v, %v", tok, err)
	}

	for _, tc := range []struct{ name, file, want string }{
		{"empty", "", "no tokens"},
		{"empty list", "[]", "no tokens"},
		{"not a list", "name: x\n", "not a list of tokens"},
		{"unknown field", "- name: a\n  secret: 0123456789abcdef\n  role: read\n  rol: x\n", "field rol not found"},
		{"no name", "- secret: 0123456789abcdef\n  role: read\n", "line 1: [0].name: required"},
		{"bad name", "- name: a b\n  secret: 0123456789abcdef\n  role: read\n", `[0].name: "a b"`},
		{"duplicate name", "- {name: a, secret: 0123456789abcdef, role: read}\n- {name: a, secret: 0123456789abcdeg, role: read}\n", `line 2: [1].name: "a" is also the name of token [0]`},
		{"no role", "- {name: a, secret: 0123456789abcdef}\n", "[0].role: required"},
		{"bad role", "- {name: a, secret: 0123456789abcdef, role: root}\n", `[0].role: "root" is not one of read, submit, admin, agent`},
		{"no secret", "- {name: a, role: read}\n", "[0].secret: required"},
		{"short secret", "- {name: a, secret: short, role: read}\n", "[0].secret: 5 characters, at least 16"},
		{"both secrets", "- {name: a, secret: 0123456789abcdef, secret_sha256: " + hex.EncodeToString(sum[:]) + ", role: read}\n", "not both"},
		{"bad hash", "- {name: a, secret_sha256: abc, role: read}\n", "[0].secret_sha256: want 64 hex"},
		{"same secret", "- {name: a, secret: 0123456789abcdef, role: read}\n- {name: b, secret: 0123456789abcdef, role: admin}\n", `[1].secret: token "a" has the same secret`},
		{"namespaces on admin", "- {name: a, secret: 0123456789abcdef, role: admin, namespaces: [x]}\n", "[0].namespaces: only read and submit tokens"},
		{"bad namespace", "- {name: a, secret: 0123456789abcdef, role: submit, namespaces: [Team_A]}\n", `[0].namespaces[0]: "Team_A" is not a namespace name`},
		{"two documents", "- {name: a, secret: 0123456789abcdef, role: read}\n---\n- {name: b, secret: 0123456789abcdeg, role: read}\n", "more than one YAML document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseTokens([]byte(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// FuzzParseTokens: any input gives tokens or an error, never a panic; accepted tokens
// are valid, unique, and each secret given in clear authenticates as its own token.
func FuzzParseTokens(f *testing.F) {
	for _, s := range []string{
		"", "[]", "- {name: a, secret: 0123456789abcdef, role: read}",
		"- name: a\n  secret: 0123456789abcdef\n  role: submit\n  namespaces: [x, y]\n- name: b\n  secret: fedcba9876543210\n  role: agent\n",
		"- {name: a, secret_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, role: admin}",
		"- name: [x]", "- {name: a, role: read, namespaces: {a: b}}", "---\n---\n", "- &a {name: a}\n- *a\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		toks, err := ParseTokens(raw)
		if err != nil {
			if toks != nil {
				t.Fatalf("tokens %v with error %v", toks, err)
			}
			return
		}
		if len(toks) == 0 {
			t.Fatal("accepted a file without tokens")
		}
		names := map[string]bool{}
		for _, tok := range toks {
			if names[tok.Name] || !tokenNameRE.MatchString(tok.Name) {
				t.Fatalf("bad or duplicate name %q", tok.Name)
			}
			names[tok.Name] = true
			if _, ok := roleNames[tok.Role]; !ok {
				t.Fatalf("token %q: role %v", tok.Name, tok.Role)
			}
			if len(tok.Namespaces) > 0 && tok.Role != RoleSubmit {
				t.Fatalf("token %q: namespaces on role %v", tok.Name, tok.Role)
			}
		}
		// Tokens with a clear secret authenticate as themselves.
		var entries []tokenEntry
		if err := yaml.Unmarshal(raw, &entries); err != nil {
			t.Fatalf("accepted file does not decode again: %v", err)
		}
		a := NewACL(ACLConfig{Tokens: toks})
		for _, e := range entries {
			if e.Secret == "" {
				continue
			}
			tok, ok := a.Authenticate(e.Secret)
			if !ok || tok.Name != e.Name {
				t.Fatalf("secret of %q authenticates as %v, %v", e.Name, tok, ok)
			}
		}
	})
}
