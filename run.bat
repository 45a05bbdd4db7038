@echo off
rem EasyPhoto launcher for Windows: double-click to install (first run) and start.
rem   run.bat                 install if needed, start the app, open the browser
rem   run.bat --install-only  install only
rem   run.bat test            run the test suite
setlocal EnableDelayedExpansion
cd /d "%~dp0"

set MODE=run
if /I "%~1"=="--install-only" (set MODE=install& shift)
if /I "%~1"=="test" (set MODE=test& shift)
if /I "%~1"=="mutate" (echo Mutation testing needs Linux or macOS ^(mutmut forks^): run ./run.sh mutate there or in WSL.& exit /b 2)
rem cmd's shift does not change %*, so the arguments after the mode are collected one by one
set ARGS=
:collect
if "%~1"=="" goto collected
set ARGS=!ARGS! %1
shift
goto collect
:collected

set PY=
for %%P in (py python) do (
  if not defined PY (
    %%P -c "import sys; sys.exit(sys.version_info < (3, 10))" >nul 2>&1 && set PY=%%P
  )
)
if not defined PY (
  echo EasyPhoto: Python 3.10 or newer is needed. Install it from https://www.python.org/downloads/
  echo (tick "Add python.exe to PATH"^), then double-click run.bat again.
  goto :error
)

if not exist ".venv\Scripts\python.exe" (
  echo Creating the Python environment in .venv ^(first run only^)...
  %PY% -m venv .venv || goto :error
)
set VPY=.venv\Scripts\python.exe

set REQ=requirements.txt
if "%MODE%"=="test" set REQ=requirements-dev.txt
for /f %%H in ('type requirements.txt %REQ% 2^>nul ^| %VPY% -c "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"') do set WANT=%%H
set STAMP=.venv\.easyphoto-%MODE%.stamp
set HAVE=
if exist "%STAMP%" set /p HAVE=<"%STAMP%"
if not "%HAVE%"=="%WANT%" (
  echo Installing EasyPhoto's packages ^(first run: several minutes^)...
  %VPY% -m pip install --quiet --upgrade pip || goto :error
  for /f "tokens=*" %%T in ('findstr /B "torch==" requirements.txt') do set TORCH=%%T
  %VPY% -c "import torch" >nul 2>&1
  if errorlevel 1 (
    nvidia-smi >nul 2>&1
    if errorlevel 1 (
      echo No NVIDIA GPU found: installing the CPU build of PyTorch.
      %VPY% -m pip install !TORCH! || goto :error
    ) else (
      echo NVIDIA GPU found: installing PyTorch with CUDA.
      %VPY% -m pip install !TORCH! --index-url https://download.pytorch.org/whl/cu128 || goto :error
    )
  )
  %VPY% -m pip install -r %REQ% || goto :error
  echo %WANT%>"%STAMP%"
)

if "%MODE%"=="install" (echo EasyPhoto is installed. Double-click run.bat to start. & goto :end)
if "%MODE%"=="test" (%VPY% -m pytest !ARGS! || goto :error
  goto :end)
%VPY% app.py !ARGS!
if errorlevel 1 goto :error
goto :end

:error
echo.
echo EasyPhoto stopped with an error (see the message above). The log is in the data folder, under logs\.
pause
exit /b 1
:end
endlocal
