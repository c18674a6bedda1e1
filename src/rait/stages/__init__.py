"""The stages of the method, side by side over the shared layer (data, backends, models,
prompts, scoring, certainty, knowledge, methods, metrics, figures, layout, io, config, options,
stage), in the order `rait run` chains them:

    probe     pool -> knowledge table (correctness, certainty)
    rehearse  knowledge table -> rehearsal SFT -> probe again -> table with knowledge flow
    build     knowledge table -> RAIT set (a selection method from rait.methods)
    conflict  RAIT set -> static-conflict diagnostic (CRSS)
    train     RAIT set -> tuned model (SFT, LoRA or full)
    eval      model + test set -> Pc / Pw / Pr / THS
    report    a run directory or result files -> Markdown + HTML

Each module has one file-in/file-out entry function that its CLI verb and the pipeline both
call, and writes its output through the contract in rait.stage. Stages import only the shared
layer; rehearse, which is probe + train + probe again, calls those stages' entry functions.
"""
