# Windows entry point, same verbs as build.sh: build (default), test, native, bench.
param([string]$Command = "build", [Parameter(ValueFromRemainingArguments = $true)][string[]]$Rest)
$ErrorActionPreference = "Stop"
Set-Location $PSScriptRoot
$config = if ($env:CONFIGURATION) { $env:CONFIGURATION } else { "Release" }

function Build-Native {
    if (-not (Get-Command nvcc -ErrorAction SilentlyContinue)) {
        Write-Host "build.ps1: nvcc not found: skipping the native CUDA library (the CPU backend still works)"
        return
    }
    cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    cmake --build build/native --config Release
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}

function Build-Managed {
    dotnet build Mamba.sln -c $config -nologo -v quiet
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}

switch ($Command) {
    "build"  { Build-Native; Build-Managed }
    "native" { Build-Native }
    "test"   { Build-Native; Build-Managed; dotnet test --project tests/Mamba.Tests/Mamba.Tests.csproj -c $config --no-build @Rest; exit $LASTEXITCODE }
    "bench"  { Build-Managed; dotnet run --project bench/Mamba.Bench -c Release --no-build -- @Rest; exit $LASTEXITCODE }
    default  { Write-Error "usage: ./build.ps1 [build|test|native|bench] [args...]"; exit 2 }
}
