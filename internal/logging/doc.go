// Package logging owns the process logger: log/slog JSON on stderr with a
// level and the role as a field. It must not log request bodies or secrets;
// callers pass only fields that are safe to show.
package logging
