// kernels/emu/module.h — registration glue for one emulated kernel module (.cu -> .so).
//
// gen_module.sh writes a .cpp that includes the .cu and then:
//   L4EMU_MODULE_BEGIN  L4EMU_KERNEL(name1)  L4EMU_KERNEL_LB(name2, <__launch_bounds__ args>) ...  L4EMU_MODULE_END
// Each L4EMU_KERNEL makes a trampoline whose parameter types are deduced from the kernel itself, which
// unpacks cuLaunchKernel-style `void** args` (args[i] points at parameter i's value): no per-kernel glue.
#pragma once
#include <cstddef>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#define L4EMU_PROBE 0x4c34454d5550524full
template <class Sig> struct l4emu_entry_of;
template <class... P> struct l4emu_entry_of<void(P...)> {
    template <void (*K)(P...), std::size_t... I> static void call(void** a, std::index_sequence<I...>) {
        // Reading the host's argument array is not a kernel access: the checker ignores it.
        l4emu_rt_quiet(1);
        std::tuple<std::remove_cv_t<std::remove_reference_t<P>>...> v{*static_cast<std::remove_cv_t<std::remove_reference_t<P>>*>(a[I])...};
        l4emu_rt_quiet(0);
        K(std::get<I>(v)...);
    }
    template <void (*K)(P...)> static void entry(void** a) {
        // Parameter probe (graph capture copies argument values): a = {nullptr, L4EMU_PROBE, unsigned out[1 + n]}.
        // A real launch never passes a null first argument pointer.
        // The probe reads the host's argument array, not device memory: quiet for the checker, like the unpacking.
        if constexpr (sizeof...(P) > 0) {
            l4emu_rt_quiet(1);
            if (a[0] == nullptr && a[1] == reinterpret_cast<void*>(L4EMU_PROBE)) {
                unsigned* out = static_cast<unsigned*>(a[2]);
                unsigned i = 0;
                out[i++] = sizeof...(P);
                ((out[i++] = (unsigned)sizeof(std::remove_cv_t<std::remove_reference_t<P>>)), ...);
                l4emu_rt_quiet(0);
                return;
            }
            l4emu_rt_quiet(0);
        }
        call<K>(a, std::index_sequence_for<P...>{});
    }
};

#define L4EMU_KERNEL(k) {#k, &l4emu_entry_of<decltype(k)>::template entry<&k>, 0u},
// __launch_bounds__(max_threads[, min_blocks[, max_cluster]]): the bounds' text is evaluated here.
#define L4EMU_LB_FIRST(a, ...) (a)
#define L4EMU_KERNEL_LB(k, ...) {#k, &l4emu_entry_of<decltype(k)>::template entry<&k>, (unsigned)L4EMU_LB_FIRST(__VA_ARGS__, 0)},
#define L4EMU_MODULE_BEGIN static const l4emu_kernel l4emu_module_table[] = {
// l4emu_module_tls_touch: the checker calls it on the thread that runs a checked launch so that the module's
// TLS block (its static __shared__ variables, see emu.h) exists; dlinfo(RTLD_DI_TLS_DATA) then finds it.
#define L4EMU_MODULE_END \
    {nullptr, nullptr, 0u}}; \
    static thread_local char l4emu_tls_anchor; \
    extern "C" __attribute__((visibility("default"))) void* l4emu_module_tls_touch(void) { return &l4emu_tls_anchor; } \
    extern "C" __attribute__((visibility("default"))) void* l4emu_get_function(const char* name) { \
        for (const l4emu_kernel* k = l4emu_module_table; k->name; ++k) \
            if (std::strcmp(k->name, name) == 0) return const_cast<l4emu_kernel*>(k); \
        return nullptr; \
    } \
    extern "C" __attribute__((visibility("default"))) const char* l4emu_module_kernels(void) { \
        static const std::string names = [] { \
            std::string s; \
            for (const l4emu_kernel* k = l4emu_module_table; k->name; ++k) s += (s.empty() ? "" : ",") + std::string(k->name); \
            return s; \
        }(); \
        return names.c_str(); \
    }
