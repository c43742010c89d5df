/* edgebuild's bare-metal start-up for the firmware it runs under qemu-system-arm (Arm Cortex-M).
 *
 * The vector table, the reset handler (FPU/MVE on, .data copied, .bss zeroed, C++ constructors
 * run, then main), SysTick counting its wraps (the harness counts instructions with it), and
 * fault handlers that say which fault and where through semihosting, then stop QEMU with exit
 * code 3. No C library start-up files are used (-nostartfiles); the symbols come from the
 * linker script edgebuild writes for the board (mcu_firmware.linker_script). */
#include <stdint.h>

extern uint32_t __stack_top[], __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);
extern int main(void);

volatile uint32_t edgebuild_systick_wraps;
void* __dso_handle = 0; /* C++ registers static destructors against it (crtbegin.o is not linked) */

static uint32_t semihost(uint32_t op, const void* arg) {
  register uint32_t r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

/* SYS_EXIT_EXTENDED: QEMU exits with ``code`` (plain SYS_EXIT cannot pass one on 32-bit Arm). */
void edgebuild_exit(int code) {
  uint32_t block[2] = {0x20026u /* ADP_Stopped_ApplicationExit */, (uint32_t)code};
  semihost(0x20u, block);
  for (;;) {
  }
}

void edgebuild_write(const char* text) { semihost(0x04u /* SYS_WRITE0 */, text); }

static void write_hex(const char* label, uint32_t value) {
  char text[11] = {'0', 'x'};
  for (int i = 0; i < 8; ++i) text[2 + i] = "0123456789abcdef"[(value >> (28 - 4 * i)) & 0xFu];
  text[10] = 0;
  edgebuild_write(label);
  edgebuild_write(text);
}

/* The exception number, the fault status registers and the faulting PC from the stacked frame. */
__attribute__((used)) void edgebuild_fault(const uint32_t* frame) {
  uint32_t ipsr;
  __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
  static const char* const names[16] = {"", "", "NMI", "HardFault", "MemManage", "BusFault", "UsageFault",
                                         "SecureFault", "", "", "", "SVCall", "DebugMonitor", "", "PendSV", ""};
  edgebuild_write("edgebuild: fault: ");
  edgebuild_write((ipsr & 0x1FFu) < 16 ? names[ipsr & 0xFu] : "an interrupt");
  write_hex(" CFSR ", *(volatile uint32_t*)0xE000ED28u);
  write_hex(" HFSR ", *(volatile uint32_t*)0xE000ED2Cu);
  write_hex(" PC ", frame[6]);
  edgebuild_write("\n");
  edgebuild_exit(3);
}

__attribute__((naked)) void Fault_Handler(void) {
  __asm__ volatile(
      "tst lr, #4\n"
      "ite eq\n"
      "mrseq r0, msp\n"
      "mrsne r0, psp\n"
      "b edgebuild_fault\n");
}

void SysTick_Handler(void) { edgebuild_systick_wraps++; }

void Reset_Handler(void) {
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  *(volatile uint32_t*)0xE000ED88u |= (0xFu << 20); /* CPACR: CP10 and CP11 (FPU, MVE) */
  __asm__ volatile("dsb\n isb" ::: "memory");
#endif
  *(volatile uint32_t*)0xE000ED24u |= (7u << 16); /* UsageFault, BusFault, MemManage: report, not escalate */
  for (uint32_t *src = __data_load, *dst = __data_start; dst < __data_end;) *dst++ = *src++;
  for (uint32_t* dst = __bss_start; dst < __bss_end;) *dst++ = 0;
  for (void (**init)(void) = __init_array_start; init < __init_array_end; ++init) (*init)();
  edgebuild_exit(main());
}

/* newlib's stubs: no heap (TFLM needs none; a malloc fails instead of growing into the stack). */
void* _sbrk(int increment) {
  (void)increment;
  return (void*)-1;
}

__attribute__((section(".vectors"), used)) void (*const edgebuild_vectors[16])(void) = {
    (void (*)(void))__stack_top, Reset_Handler, Fault_Handler, Fault_Handler, Fault_Handler, Fault_Handler,
    Fault_Handler, Fault_Handler, 0, 0, 0, Fault_Handler, Fault_Handler, 0, Fault_Handler, SysTick_Handler,
};
