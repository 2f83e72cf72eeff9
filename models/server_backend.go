package models

// SetBackend names the engine under the model (go or ort) in the OIP model
// metadata (parameters.backend).
func (s *Server) SetBackend(name string) { s.backend.Store(name) }

// Backend is the engine SetBackend named, or "" before.
func (s *Server) Backend() string {
	v, _ := s.backend.Load().(string)
	return v
}
