// RUN: qlora-opt %s --convert-qlora-to-emitc -verify-diagnostics

// Tests that the conversion refuses a module without a memory plan.
// expected-error @below {{no memory plan: run qlora-plan-memory first}}
module {
}
