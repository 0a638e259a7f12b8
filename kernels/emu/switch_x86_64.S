// void l4emu_switch(void** save_sp, void* new_sp)
// Saves the System V callee-saved registers on the current stack, stores %rsp in *save_sp, loads
// new_sp and restores the registers found there. No syscall (swapcontext does a sigprocmask per switch).
// MXCSR / x87 control words are not switched: kernels never change rounding modes.
// A fresh fiber's stack holds 6 zero registers, then the address of its entry function, then a zero
// "return address" (the entry function never returns).
    .text
    .globl l4emu_switch
    .hidden l4emu_switch
    .type l4emu_switch, @function
    .p2align 4
l4emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size l4emu_switch, .-l4emu_switch
    .section .note.GNU-stack, "", @progbits
