package auth

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestParseRole(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Role
		wantErr bool
	}{
		{in: "agent", want: RoleAgent},
		{in: "reader", want: RoleReader},
		{in: "auditor", want: RoleAuditor},
		{in: "admin", want: RoleAdmin},
		{in: "", wantErr: true},
		{in: "Admin", wantErr: true},
		{in: "admin ", wantErr: true},
		{in: "root", wantErr: true},
		{in: "writer", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseRole(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseRole(%q) = %q, %v; want %q, wantErr %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestRequire(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		role  Role
		roles []Role
		allow bool
	}{
		{name: "admin allowed", role: RoleAdmin, roles: []Role{RoleAdmin}, allow: true},
		{name: "one of several", role: RoleReader, roles: []Role{RoleAgent, RoleReader}, allow: true},
		{name: "agent denied admin route", role: RoleAgent, roles: []Role{RoleAdmin}},
		{name: "auditor denied upload", role: RoleAuditor, roles: []Role{RoleAgent}},
		{name: "admin is not a superuser", role: RoleAdmin, roles: []Role{RoleAuditor}},
		{name: "no roles listed", role: RoleAdmin},
		{name: "zero principal", role: "", roles: []Role{RoleAgent}},
		{name: "zero principal against empty role", role: "", roles: []Role{""}},
		{name: "unknown role even if listed", role: "root", roles: []Role{"root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := Require(Principal{Subject: "s", Role: tt.role}, tt.roles...)
			if tt.allow {
				if err != nil {
					t.Errorf("Require(%q, %v) = %v, want nil", tt.role, tt.roles, err)
				}
				return
			}
			if !errors.Is(err, ErrForbidden) {
				t.Errorf("Require(%q, %v) = %v, want ErrForbidden", tt.role, tt.roles, err)
			}
		})
	}
}

func TestContext(t *testing.T) {
	t.Parallel()
	if p, ok := FromContext(context.Background()); ok {
		t.Fatalf("FromContext(empty) = %+v, true; want false", p)
	}
	want := Principal{Subject: "alice", Role: RoleReader, JTI: "j", ExpiresAt: time.Unix(1, 0)}
	got, ok := FromContext(NewContext(context.Background(), want))
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("FromContext(NewContext(p)) = %+v, %v; want %+v, true", got, ok, want)
	}
}
