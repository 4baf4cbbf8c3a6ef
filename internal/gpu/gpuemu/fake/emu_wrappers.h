// Turns a kernel into emu_<name>(void** params), unpacking params the way
// cuLaunchKernel does: params[i] points at argument i.
template <typename... A, std::size_t... I>
static void emu_call(void (*f)(A...), void** p, std::index_sequence<I...>) { f(*static_cast<A*>(p[I])...); }
template <typename... A>
static void emu_run(void (*f)(A...), void** p) { emu_call(f, p, std::index_sequence_for<A...>{}); }
#define EMU(name) extern "C" void emu_##name(void** p) { emu_run(name, p); }
